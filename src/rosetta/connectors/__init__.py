"""HTTP clients of the external systems (Dynatrace, ServiceNow, Argo CD): one module per system."""
