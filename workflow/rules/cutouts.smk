# Stage: cutouts (rules to come)
