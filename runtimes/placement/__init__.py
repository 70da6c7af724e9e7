"""Placement: sites, TOSCA templates, ranking, and deployments placed across the sites."""
