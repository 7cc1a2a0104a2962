"""Ray Serve deployments: each holds one engine or one router model and translates requests to it."""
