from django.apps import AppConfig


class ClusterAppConfig(AppConfig):
    name = "tests.clusterapp"
    label = "clusterapp"
