"""The two roles of a simulated conversation, in speaking order: the user simulator opens."""

ROLES = ("user", "recommender")

# The note on a user turn whose acceptance the reference protocol recorded because the target had just been
# suggested, though the simulator did not write the accept marker itself (the report counts written acceptances).
PROTOCOL_ACCEPT_NOTE = "accept recorded by the protocol: the target was suggested"
