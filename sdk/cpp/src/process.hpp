// This process as hello reports it: its pid and its creation time the way psutil computes it
// (SPEC 10.4), so that a daemon watching pids can match it within 0.05 s.
#pragma once

#include <cstdint>

namespace trtd::detail {

std::int64_t process_id();
// Seconds since the Unix epoch; 0.0 when it cannot be told (the daemon then asks for heartbeats).
double process_start_time();

}  // namespace trtd::detail
