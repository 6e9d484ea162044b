"""The data layer: IDX files (:mod:`.idx`), datasets and the bundled MNIST
(:mod:`.datasets`), downloads (:mod:`.download`) and image files (:mod:`.preprocess`)."""
