"""
The Piko server node: upstream port, proxy port, admin port and the service tying them.
"""
