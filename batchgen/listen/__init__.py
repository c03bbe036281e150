"""Listening and delivery: the page, the live room and its server, picks, `deliver`."""
