"""Physics simulator of a multi-cup vacuum pump unit speaking the cupmon protocol.

Importing ``sim`` registers the ``sim://`` URL scheme with pyserial
(``sim/protocol_sim.py``), so ``serial.serial_for_url("sim://normal")`` and
cupmon's SerialLink read the simulator like a serial port. Nothing heavier
than pyserial is imported here (no engine, no Qt).
"""

try:
    import serial as _serial
except ImportError:  # pyserial is a dependency; without it there is simply no sim://
    pass
else:
    if "sim" not in _serial.protocol_handler_packages:
        _serial.protocol_handler_packages.append("sim")
    del _serial
