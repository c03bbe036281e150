"""Pure data and rules: tasks, parameters, chain plans, journal state (apply and replay),
polling schedules, the retry policy, errors and clean text. No I/O, no clock, no aiohttp.
"""
