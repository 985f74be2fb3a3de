"""The names both sides speak: levels, target kinds, end reasons and the lesson record's schema.

Defined once here and imported by the kiosk, the companion and its console, so a name added on one side
is known on the other (a lesson that ended for a new reason is never refused by the companion).
"""
