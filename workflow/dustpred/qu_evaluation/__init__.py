"""The polarisation branch's predictions and tables (rules ``predict_qu``, ``evaluate_qu``):
every model's E/B maps of the test cutouts (:mod:`.predict`) and their r^EE, r^BB with block
errors, gains and wins (:mod:`.tables`)."""
