"""Tables: the convex model (logistic regression), its data and encoding, the influence and
certified updates (Warnecke et al.; Guo et al.) and their verification against retraining."""
