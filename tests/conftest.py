pytest_plugins = ["rivet_django.testing.fixtures"]
