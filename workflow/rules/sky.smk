# Stage: sky (rules to come)
