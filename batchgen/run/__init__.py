"""One run of a batch: the orchestrator (`runner`) and its workers (submit, watch, finish,
download), the phase before the pool, signals, progress.
"""
