"""Small pieces every package may use: the sun's position, starting the event loop, library logging.

A leaf: it imports nothing of ours, so ``devices`` (which imports only ``protocols`` and ``common``),
``collector``, ``access`` and ``hems`` can all share it without a back-reference.
"""
