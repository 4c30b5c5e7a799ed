"""One optimizer step: the step source (pools -> micro-batches), the forward step and loss,
prefix-shared attention.
"""
