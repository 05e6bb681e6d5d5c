"""The reliability model: failures and repairs over placement groups, no node processes.

``layout`` places groups (the fabric's rendezvous placement, or the Copysets paper's
schemes), ``model`` runs the event-driven Monte Carlo, ``closed`` gives the closed-form
per-stripe estimate of the same parameters, ``stats`` the confidence intervals.
"""
