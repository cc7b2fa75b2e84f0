"""The two roles of a simulated conversation, in speaking order: the user simulator opens."""

ROLES = ("user", "recommender")
