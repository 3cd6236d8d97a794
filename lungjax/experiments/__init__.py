"""Experiments that loop over train.train_and_evaluate: cross-validation folds and seeds (crossval),
leave-one-source-out (loso)."""
