// Runs a fuzz target's LLVMFuzzerTestOneInput over saved inputs, so a corpus is a
// regression test in the normal (g++) build. Usage: fuzz_replay_<target> DIR|FILE...
// Directories are read one level deep, in name order; a target that finds a bug aborts.
// An input that hangs or eats memory fails the run too, within seconds, instead of
// taking the machine down: each input has a deadline, and the process a memory cap.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEYGATE_REPLAY_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define KEYGATE_REPLAY_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define KEYGATE_REPLAY_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define KEYGATE_REPLAY_TSAN 1
#endif

#ifdef KEYGATE_REPLAY_ASAN
// ASan reserves terabytes of address space, so RLIMIT_AS cannot cap it; its own RSS
// watchdog can. ASAN_OPTIONS given in the environment still take precedence.
extern "C" const char* __asan_default_options() { return "hard_rss_limit_mb=2048"; }
#endif

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace fs = std::filesystem;

namespace {

constexpr unsigned seconds_per_input = 30;

// The input being run, for the deadline's message (a signal handler may only write(2)).
char current[4096];

void on_deadline(int) {
    static const char msg[] = "replay: input ran out of time: ";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    ignored = ::write(2, current, std::strlen(current));
    ignored = ::write(2, "\n", 1);
    (void)ignored;
    ::_exit(1);
}

void cap_memory() {
#if !defined(KEYGATE_REPLAY_ASAN) && !defined(KEYGATE_REPLAY_TSAN)
    // 4 GiB of address space: an allocation past it throws std::bad_alloc, which the
    // targets report as a bug.
    rlimit limit{};
    limit.rlim_cur = limit.rlim_max = rlim_t{4} << 30;
    ::setrlimit(RLIMIT_AS, &limit);
#endif
}

bool read_all(const fs::path& file, std::string& out) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return false;
    out.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    return !in.bad();
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    std::vector<fs::path> inputs;
    for (int i = 1; i < argc; ++i) {
        const fs::path arg(argv[i]);
        std::error_code ec;
        if (fs::is_directory(arg, ec)) {
            std::vector<fs::path> files;
            for (const auto& entry : fs::directory_iterator(arg, ec))
                if (entry.is_regular_file()) files.push_back(entry.path());
            if (ec) {
                std::fprintf(stderr, "cannot list %s: %s\n", argv[i], ec.message().c_str());
                return 1;
            }
            std::sort(files.begin(), files.end());
            inputs.insert(inputs.end(), files.begin(), files.end());
        } else if (fs::is_regular_file(arg, ec)) {
            inputs.push_back(arg);
        } else {
            std::fprintf(stderr, "no such file or directory: %s\n", argv[i]);
            return 1;
        }
    }
    // An empty corpus would pass without testing anything.
    if (inputs.empty()) {
        std::fprintf(stderr, "no inputs found\n");
        return 1;
    }

    cap_memory();
    std::signal(SIGALRM, on_deadline);
    std::string bytes;
    for (const auto& file : inputs) {
        if (!read_all(file, bytes)) {
            std::fprintf(stderr, "cannot read %s\n", file.c_str());
            return 1;
        }
        // Named first, so the output of a crash says which input caused it.
        std::printf("replay %s (%zu bytes)\n", file.c_str(), bytes.size());
        std::fflush(stdout);
        std::snprintf(current, sizeof current, "%s", file.c_str());
        ::alarm(seconds_per_input);
        LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        ::alarm(0);
    }
    std::printf("ran %zu inputs\n", inputs.size());
    return 0;
}
