# Stage: preprocess (rules to come)
