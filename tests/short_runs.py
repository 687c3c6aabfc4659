"""Settings for tests that train on purpose for a fraction of an epoch or a few epochs."""

# the local defaults put a floor of steps under the epochs (optim.min_steps), so that
# small folders train long enough; a test that sets short epochs means them
NO_STEP_FLOOR = ("supernet.optim.min_steps=0", "retrain.optim.min_steps=0")
