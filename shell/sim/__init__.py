"""``fabric sim``: scenarios on the simulator, reliability models and sweeps over them."""
