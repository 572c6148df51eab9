# Stage: models (rules to come)
