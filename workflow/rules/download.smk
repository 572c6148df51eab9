# Stage: download (rules to come)
