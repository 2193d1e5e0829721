"""
``piko forward``: local TCP ports forwarded to Piko endpoints through the proxy port
(:func:`piko.forward.service.make_forward_service`).
"""
