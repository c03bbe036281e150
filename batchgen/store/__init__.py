"""The batch folder on disk: safe file operations, the journal and the ledger over it, the
batch lock, the price cache.
"""
