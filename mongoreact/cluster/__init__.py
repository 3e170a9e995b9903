"""What the instances of a cluster share and agree on: the leader, the published task
definitions, throttles, the server's clock."""
