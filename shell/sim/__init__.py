"""``fabric sim``: scenarios on the deterministic simulator (``runner``), its client,
fault applier and trace hash."""
