"""The publishing wing: confirming the search's best on fresh seeds (`retrain`, the command of
`scripts/retrain_best.py`, and `confirm`), reproducing a published row (`reproduce`), the
leaderboard, the report pages and predictions. Importing it does nothing."""
