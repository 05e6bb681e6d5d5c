"""``fabric sim``: scenarios on the deterministic simulator (``runner``, with its client,
fault applier and trace hash), the reliability model (``reliability``) and sweeps over
either (``sweep``)."""
