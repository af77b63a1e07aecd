//! The i8042 keyboard controller, reduced to what a microVM needs: the CPU reset command.

/// Data port.
pub const DATA_PORT: u16 = 0x60;
/// Command/status port.
pub const COMMAND_PORT: u16 = 0x64;
/// "Pulse output line 0": resets the CPU. Linux sends it for `reboot=k`.
const CMD_RESET_CPU: u8 = 0xfe;

/// What a write to the controller asks of the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8042Action {
    /// Nothing.
    None,
    /// The guest asked for a CPU reset.
    Reset,
}

/// The controller. It has no state: the status always reads "buffers empty", so a guest
/// waiting to send a command never spins.
#[derive(Debug, Default)]
pub struct I8042;

impl I8042 {
    /// Guest read of `port`.
    pub fn read(&self, _port: u16) -> u8 {
        0
    }

    /// Guest write of `value` to `port`.
    pub fn write(&self, port: u16, value: u8) -> I8042Action {
        if port == COMMAND_PORT && value == CMD_RESET_CPU {
            I8042Action::Reset
        } else {
            I8042Action::None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_on_command_port_only() {
        let kbd = I8042;
        assert_eq!(kbd.write(COMMAND_PORT, 0xfe), I8042Action::Reset);
        assert_eq!(kbd.write(DATA_PORT, 0xfe), I8042Action::None);
        assert_eq!(kbd.write(COMMAND_PORT, 0xad), I8042Action::None);
        assert_eq!(kbd.read(COMMAND_PORT) & 0x2, 0, "input buffer reads empty");
    }
}
