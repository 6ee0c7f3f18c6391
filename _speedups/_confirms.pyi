"""Types of the compiled confirm and ack bookkeeping (`_confirms.pyx`).

The pure-Python twin (`_confirms_py.py`) has the same public names and behaviour.
"""

class ConfirmTracker:
    """Unconfirmed publishes of one channel, in broker delivery-tag order."""

    def __init__(self) -> None: ...
    def add(self, data: bytes) -> int:
        """Record one publish; returns its logical sequence number."""
    @property
    def last_seq(self) -> int:
        """The sequence number of the newest publish (0 before the first)."""
    @property
    def confirmed_through(self) -> int:
        """Every publish with seq <= this is settled (acked or nacked)."""
    def __len__(self) -> int: ...
    def settle(self, tag: int, multiple: bool, nack: bool) -> list[tuple[int, bytes]]:
        """Apply one Basic.Ack/Nack; returns the (seq, data) pairs the broker nacked."""
    def restart(self) -> list[tuple[int, bytes]]:
        """Renumber unsettled publishes from tag 1; returns their (seq, data) pairs."""
    def fail_all(self) -> list[tuple[int, bytes]]:
        """Give up on every unsettled publish; returns their (seq, data) pairs."""

class AckTracker:
    """Delivery tags handed to the application and not yet acked, per channel generation."""

    def __init__(self) -> None: ...
    def received(self, tag: int) -> None:
        """Note a delivered tag."""
    def done(self, tag: int) -> None:
        """Mark one delivery processed."""
    def forget(self, tag: int) -> None:
        """Mark one delivery settled another way (nacked or rejected on its own)."""
    def take(self) -> int:
        """The tag to ack with multiple=true over the settled prefix, or 0."""
    def take_singles(self) -> list[int]:
        """The tags done above a gap, to ack one by one, ascending."""
    @property
    def outstanding(self) -> int:
        """Deliveries received but not yet settled."""
    def reset(self) -> None:
        """A new channel generation: tags start again from 1."""
