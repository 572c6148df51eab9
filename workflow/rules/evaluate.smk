# Stage: evaluate (rules to come)
