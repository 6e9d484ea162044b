"""File formats: model files (:mod:`.models`, read by :mod:`.archive` with bounded
memory), checkpoints (:mod:`.checkpoints`), atomic writes (:mod:`.atomic`), the lock of
a run's directory (:mod:`.lock`) and output checks (:mod:`.outputs`)."""
