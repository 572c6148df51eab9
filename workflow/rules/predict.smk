# Stage: predict (rules to come)
