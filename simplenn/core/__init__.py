"""The core: the network math (:mod:`.network`), the model (:mod:`.model`) and
training (:mod:`.training`)."""
