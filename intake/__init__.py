"""HTTP edge: app factory, controllers, wire schemas, auth, problem details."""
