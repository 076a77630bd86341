#include "process.hpp"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>

#ifdef _WIN32
#define WIN32_LEAN_AND_MEAN
#include <windows.h>
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#include <unistd.h>
#else
#include <unistd.h>
#endif

namespace trtd::detail {

std::int64_t process_id() {
#ifdef _WIN32
    return static_cast<std::int64_t>(GetCurrentProcessId());
#else
    return static_cast<std::int64_t>(getpid());
#endif
}

double process_start_time() {
#ifdef _WIN32
    // GetProcessTimes' creation time: 100 ns ticks since 1601-01-01.
    FILETIME created, exited, kernel, user;
    if (!GetProcessTimes(GetCurrentProcess(), &created, &exited, &kernel, &user)) return 0.0;
    ULARGE_INTEGER ticks;
    ticks.LowPart = created.dwLowDateTime;
    ticks.HighPart = created.dwHighDateTime;
    constexpr double epoch_offset_s = 11644473600.0;  // 1601-01-01 to 1970-01-01
    return static_cast<double>(ticks.QuadPart) / 1e7 - epoch_offset_s;
#elif defined(__APPLE__)
    int mib[4] = {CTL_KERN, KERN_PROC, KERN_PROC_PID, static_cast<int>(getpid())};
    struct kinfo_proc info;
    size_t size = sizeof info;
    if (sysctl(mib, 4, &info, &size, nullptr, 0) != 0) return 0.0;
    const auto& t = info.kp_proc.p_starttime;
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
#else
    // Linux: btime (boot time, /proc/stat) + starttime (field 22 of /proc/self/stat, in clock
    // ticks since boot) / CLK_TCK: psutil's create_time().
    std::ifstream stat_file("/proc/stat");
    std::string line;
    double btime = 0.0;
    while (std::getline(stat_file, line)) {
        if (line.rfind("btime ", 0) == 0) {
            btime = std::stod(line.substr(6));
            break;
        }
    }
    std::ifstream self("/proc/self/stat");
    std::string text((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
    auto close_paren = text.rfind(')');  // the command name may hold spaces and parentheses
    long ticks_per_s = sysconf(_SC_CLK_TCK);
    if (btime <= 0.0 || close_paren == std::string::npos || ticks_per_s <= 0) return 0.0;
    std::istringstream fields(text.substr(close_paren + 1));
    std::string field;
    // After ")": field 3 (state) comes first, so field 22 is the 20th.
    for (int i = 3; i <= 22; ++i) {
        if (!(fields >> field)) return 0.0;
    }
    return btime + std::stod(field) / static_cast<double>(ticks_per_s);
#endif
}

}  // namespace trtd::detail
