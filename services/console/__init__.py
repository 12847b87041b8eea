"""The operator console: recent frames, teach-by-example review, score histograms and drift badges.

    inctrl console            serve it (services/console/commands.py; app in services/console/app.py)
    inctrl review ...         the review operations from a shell (services/console/review.py)
"""
