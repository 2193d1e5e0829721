"""
A request receiver set after the request body already ended still hears
``body_end`` (the ``if …: pass`` that stood in ``set_receiver``, issue 13
point 10).
"""

from twisted.trial.unittest import SynchronousTestCase

from piko.test.http.test_server import Handler, Receiver, connect


class LateReceiverTests(SynchronousTestCase):
    def test_empty_body_ended_before_receiver(self) -> None:
        """
        A body-less POST ends while the handler is still deciding; the
        receiver it sets later gets ``body_end`` (once), as one set at once
        would.
        """
        handler = Handler(auto=False)
        proto, _, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
        exchange = handler.exchanges[0]
        self.assertTrue(exchange.body_done)
        late = Receiver()
        exchange.set_receiver(late)
        self.assertEqual((late.data, late.ended), ([], True))

    def test_receiver_set_at_once_unchanged(self) -> None:
        """The usual path: a receiver set in request_received hears the body and its end."""
        handler = Handler(auto=False, read_body=True)
        proto, _, _ = connect(handler)
        proto.dataReceived(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        receiver = handler.receivers[0]
        self.assertEqual((b"".join(receiver.data), receiver.ended), (b"abc", True))
