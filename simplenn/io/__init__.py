"""File formats: model files (:mod:`.models`), checkpoints (:mod:`.checkpoints`) and
atomic writes (:mod:`.atomic`)."""
