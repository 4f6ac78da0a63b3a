"""Sequence classification shared by finetune, predict and in-context.

- data: tokenised labelled splits, length fitting (truncation), right-padded batches with [SEP]
- engine: token or cached-feature inputs, the training loop with early stopping, probabilities, evaluation
- metrics: the one accuracy / MCC / macro F1 / AUROC / cross-entropy implementation and the stderr table
"""
