//! NVML's clock event ("throttle") reason bits (`nvmlClocksEventReason*`, the values in
//! `nvml.h`), named once, and which of them mean the measurement was slowed down.

pub const GPU_IDLE: u64 = 0x1;
/// Also NVML's `ApplicationsClocksSetting` (the same bit, renamed): a clock lock is limiting.
pub const USER_DEFINED_CLOCKS: u64 = 0x2;
pub const SW_POWER_CAP: u64 = 0x4;
pub const HW_SLOWDOWN: u64 = 0x8;
pub const SYNC_BOOST: u64 = 0x10;
pub const SW_THERMAL_SLOWDOWN: u64 = 0x20;
pub const HW_THERMAL_SLOWDOWN: u64 = 0x40;
pub const HW_POWER_BRAKE_SLOWDOWN: u64 = 0x80;
pub const DISPLAY_CLOCK_SETTING: u64 = 0x100;

const NAMES: [(u64, &str); 9] = [
    (GPU_IDLE, "gpu_idle"),
    (USER_DEFINED_CLOCKS, "user_defined_clocks"),
    (SW_POWER_CAP, "sw_power_cap"),
    (HW_SLOWDOWN, "hw_slowdown"),
    (SYNC_BOOST, "sync_boost"),
    (SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
    (DISPLAY_CLOCK_SETTING, "display_clock_setting"),
];

/// Reasons that slow a measurement down: power cap, thermal and hardware slowdowns, power
/// brake. Idle, user-defined/applications clocks (a lock is deliberate), sync boost and display
/// settings are not counted.
pub const SLOWDOWN: u64 = SW_POWER_CAP
    | HW_SLOWDOWN
    | SW_THERMAL_SLOWDOWN
    | HW_THERMAL_SLOWDOWN
    | HW_POWER_BRAKE_SLOWDOWN;

/// The names of the set bits (unknown bits as `0x…`).
pub fn names(bits: u64) -> Vec<String> {
    let mut out: Vec<String> = NAMES
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known = NAMES.iter().fold(0, |a, (b, _)| a | b);
    if bits & !known != 0 {
        out.push(format!("{:#x}", bits & !known));
    }
    out
}

/// The slowdown reasons among `bits`, by name.
pub fn slowdowns(bits: u64) -> Vec<String> {
    names(bits & SLOWDOWN)
}

/// Parses the names [`names`] writes (the fake device's file uses them).
pub fn bits(names: &[String]) -> Result<u64, String> {
    names.iter().try_fold(0u64, |acc, n| {
        NAMES
            .iter()
            .find(|(_, name)| name == n)
            .map(|(b, _)| acc | b)
            .ok_or_else(|| {
                format!(
                    "unknown throttle reason `{n}` (known: {})",
                    NAMES.map(|(_, n)| n).join(", ")
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_slowdowns_count() {
        let b = GPU_IDLE | SW_POWER_CAP | HW_THERMAL_SLOWDOWN;
        let n = names(b);
        assert_eq!(n, ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]);
        assert_eq!(bits(&n).unwrap(), b);
        assert_eq!(slowdowns(b), ["sw_power_cap", "hw_thermal_slowdown"]);
        assert!(slowdowns(GPU_IDLE | USER_DEFINED_CLOCKS | SYNC_BOOST).is_empty());
        assert_eq!(names(0x10000), ["0x10000"]);
        assert!(bits(&["hot".into()])
            .unwrap_err()
            .contains("unknown throttle reason `hot`"));
    }
}
