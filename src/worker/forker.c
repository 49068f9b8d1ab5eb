/*
 * corral's task forker, in C: the same line protocol as the perl forker in shell-runner.ts, but
 * each task is started with posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK)), so no page table is
 * copied and no copy-on-write fault is taken between the fork and the exec. For no-op tasks that
 * is a third of the machine's CPU time (see BENCHMARKS.md, 1a).
 *
 * stdin:  one task per line, tab-separated fields: cwd, stdin, stdout, log, command, then any
 *         number of NAME=VALUE variables added to the task's environment; in each field `%`, tab,
 *         newline and NUL are written %25, %09, %0a and %00 (nothing else is escaped)
 * stdout: `s PID` when a task still runs after 20 ms; `e PID STATUS BYTES USEC` when it ends (STATUS a
 *         wait status, BYTES the size of its log part, removed when empty, USEC how long it ran,
 *         from its start to its exit, in microseconds); `e PID STATUS BYTES USEC ERRNO` when the
 *         shell could not be started (ERRNO says why: E2BIG, ENOENT, ...; STATUS is then exit 126
 *         or 127); `e -1` when no process could be made. Written in bulk: before waiting for input,
 *         before an `s`, and every 32 tasks or 25 ms (FLUSH_EVERY, FLUSH_AFTER_MS).
 * SIGUSR1, or the death of the worker (we are reparented), means: start no more tasks.
 *
 * A task's stderr (and stdout, without a stdout file) goes to a scratch file next to its log part,
 * `.forker-PID.part`, opened once: most tasks print nothing, so the scratch is reused, and only
 * one that printed has it renamed to its log part (a fresh scratch is opened for the next). That
 * spares a create, a stat and an unlink per task (~10% of a no-op task's cost). The worker removes
 * the scratch files of forkers that died.
 *
 * Built by `npm run build` (scripts/build-forker.mjs) when a C compiler is on PATH; without it the
 * worker uses the perl forker, which behaves the same.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <limits.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/*
 * Reports of ended tasks are flushed in bulk: every FLUSH_EVERY of them, or once the oldest has
 * waited FLUSH_AFTER_MS, and always before waiting for input or writing an `s`. Each flush wakes
 * the worker's Node process, and a wake-up preempts a task on a 2-core machine: flushing every 8
 * no-op tasks cost a run of 2,000 a fifth of its time (BENCHMARKS.md, 1a). The tasks whose
 * reports are not flushed yet run again if the worker is killed (their outputs are committed by
 * the worker), so neither bound is larger than it needs to be.
 */
#define FLUSH_EVERY 32
#define FLUSH_AFTER_MS 25

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

extern char **environ;

static volatile sig_atomic_t stop_flag = 0;
static void on_usr1(int sig) {
  (void)sig;
  stop_flag = 1;
}

static char *in_buf;
static size_t in_len, in_cap;
static char out_buf[65536];
static size_t out_len;
/* Reports written but not flushed, and when the first of them was (ms, monotonic). */
static int unflushed;
static long oldest_ms;

static long now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
  return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* A task's start and end, to report how long it ran (the worker sizes its claims by it). */
static long now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (long)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void flush_out(void) {
  size_t off = 0;
  while (off < out_len) {
    ssize_t n = write(1, out_buf + off, out_len - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      _exit(1);
    }
    off += (size_t)n;
  }
  out_len = 0;
  unflushed = 0;
}

static void put(const char *fmt, long a, long b, long c, long d, long e, int fields) {
  if (out_len > sizeof(out_buf) - 128) flush_out();
  int n;
  if (fields == 1) n = snprintf(out_buf + out_len, 128, fmt, a);
  else if (fields == 4) n = snprintf(out_buf + out_len, 128, fmt, a, b, c, d);
  else n = snprintf(out_buf + out_len, 128, fmt, a, b, c, d, e);
  if (n > 0) out_len += (size_t)n;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Decodes a field's %XX escapes in place and ends it with a NUL. */
static char *unescape(char *s, size_t len) {
  char *hit = memchr(s, '%', len);
  if (!hit) {
    s[len] = '\0';
    return s;
  }
  size_t j = (size_t)(hit - s);
  for (size_t i = j; i < len; i++) {
    int hi, lo;
    if (s[i] == '%' && i + 2 < len && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
      s[j++] = (char)(hi * 16 + lo);
      i += 2;
    } else s[j++] = s[i];
  }
  s[j] = '\0';
  return s;
}

/*
 * The environment of a task: this process's, with each NAME=VALUE of `extra` (n of them) added,
 * replacing a variable of the same name. Points into `extra` and environ; freed by the caller.
 */
static char **task_env(char **extra, int n) {
  if (n == 0) return environ;
  size_t count = 0;
  while (environ[count]) count++;
  char **env = malloc((count + (size_t)n + 1) * sizeof *env);
  if (!env) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < count; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t name = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    int replaced = 0;
    for (int e = 0; e < n && !replaced; e++)
      replaced = strncmp(extra[e], environ[i], name) == 0 && extra[e][name] == '=';
    if (!replaced) env[k++] = environ[i];
  }
  for (int e = 0; e < n; e++) env[k++] = extra[e];
  env[k] = NULL;
  return env;
}

/* Reads more input; returns 0 at end of input or when told to stop. */
static int read_more(void) {
  if (in_cap - in_len < 65536) {
    in_cap = in_cap * 2 + 65536;
    in_buf = realloc(in_buf, in_cap);
    if (!in_buf) _exit(1);
  }
  for (;;) {
    ssize_t n = read(0, in_buf + in_len, in_cap - in_len);
    if (n < 0) {
      if (errno == EINTR) {
        if (stop_flag) return 0;
        continue;
      }
      return 0;
    }
    if (n == 0) return 0;
    in_len += (size_t)n;
    return 1;
  }
}

static int scratch_fd = -1;
static char scratch_path[PATH_MAX];
static size_t scratch_dir_len;

/* The scratch file in the folder of `log` (opened when there is none, or it is elsewhere). */
static int scratch_for(const char *log) {
  const char *slash = strrchr(log, '/');
  size_t dir_len = slash ? (size_t)(slash - log) : 0;
  if (scratch_fd >= 0 && dir_len == scratch_dir_len && strncmp(scratch_path, log, dir_len) == 0)
    return scratch_fd;
  if (scratch_fd >= 0) {
    close(scratch_fd);
    unlink(scratch_path);
    scratch_fd = -1;
  }
  int n = snprintf(scratch_path, sizeof scratch_path, "%.*s%s.forker-%ld.part", (int)dir_len, log,
                   dir_len ? "/" : "", (long)getpid());
  if (n < 0 || (size_t)n >= sizeof scratch_path) return -1;
  scratch_fd = open(scratch_path, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0666);
  scratch_dir_len = dir_len;
  return scratch_fd;
}

/* After a task: the size of what it printed, moved to `log` when there is any. */
static long settle_scratch(const char *log) {
  struct stat sb;
  if (scratch_fd < 0 || fstat(scratch_fd, &sb) != 0 || sb.st_size == 0) return 0;
  if (rename(scratch_path, log) != 0) {
    /* another file system, say: copy it, and keep the scratch (emptied) */
    int to = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    char buf[65536];
    off_t at = 0;
    ssize_t r;
    while (to >= 0 && (r = pread(scratch_fd, buf, sizeof buf, at)) > 0) {
      if (write(to, buf, (size_t)r) != r) break;
      at += r;
    }
    if (to >= 0) close(to);
    if (ftruncate(scratch_fd, 0) != 0) {
      close(scratch_fd);
      scratch_fd = -1;
    }
    return (long)sb.st_size;
  }
  close(scratch_fd);
  scratch_fd = -1;
  return (long)sb.st_size;
}

/* Why the last task's shell could not be started (an errno), or 0. */
static int spawn_errno;

/* The child of a failed spawn: a process that exits as the perl forker's child would have. */
static pid_t failed_child(int code) {
  pid_t pid = fork();
  if (pid == 0) _exit(code);
  return pid;
}

static pid_t start(char *cwd, char *in, char *out, char *log, char *cmd, char **env) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  sigset_t none, def;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&at);
  sigemptyset(&none);
  sigemptyset(&def);
  sigaddset(&def, SIGUSR1);
  sigaddset(&def, SIGPIPE);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &def);
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  posix_spawn_file_actions_addchdir_np(&fa, cwd);
  posix_spawn_file_actions_addopen(&fa, 0, in[0] ? in : "/dev/null", O_RDONLY, 0);
  int scratch = scratch_for(log);
  if (out[0]) posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  else if (scratch >= 0) posix_spawn_file_actions_adddup2(&fa, scratch, 1);
  else posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0666);
  if (scratch >= 0) posix_spawn_file_actions_adddup2(&fa, scratch, 2);
  else posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0666);
  char *argv[] = {"sh", "-c", cmd, NULL};
  pid_t pid = -1;
  int err = env ? posix_spawn(&pid, "/bin/sh", &fa, &at, argv, env) : ENOMEM;
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  spawn_errno = err;
  if (err == 0) return pid;
  /* a file or the folder could not be opened (126), or the shell could not be run (127) */
  return failed_child(err == ENOENT && access("/bin/sh", X_OK) != 0 ? 127 : 126);
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: a read in progress returns EINTR */
  sigaction(SIGUSR1, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  pid_t worker = getppid();
  size_t pos = 0;
  while (!stop_flag) {
    char *nl = in_len > pos ? memchr(in_buf + pos, '\n', in_len - pos) : NULL;
    if (!nl) {
      flush_out();
      if (pos > 0) {
        memmove(in_buf, in_buf + pos, in_len - pos);
        in_len -= pos;
        pos = 0;
      }
      if (!read_more()) break;
      continue;
    }
    char *line = in_buf + pos;
    size_t len = (size_t)(nl - line);
    pos += len + 1;
    if (stop_flag || getppid() != worker) break;
    /* the five fixed fields, then the task's variables, as many as the line has */
    char *end = line + len;
    int fields = 1;
    for (char *t = line; (t = memchr(t, '\t', (size_t)(end - t))) != NULL; t++) fields++;
    char **f = fields >= 5 ? malloc((size_t)fields * sizeof *f) : NULL;
    if (!f) {
      put("e %ld\n", -1, 0, 0, 0, 0, 1);
      flush_out();
      continue;
    }
    char *p = line;
    for (int k = 0; k < fields; k++) {
      char *t = k + 1 < fields ? memchr(p, '\t', (size_t)(end - p)) : end;
      f[k] = unescape(p, (size_t)(t - p));
      p = t + 1;
    }
    char **env = task_env(f + 5, fields - 5);
    long began = now_us();
    pid_t pid = start(f[0], f[1], f[2], f[3], f[4], env);
    if (env && env != environ) free(env);
    if (pid < 0) {
      free(f);
      put("e %ld\n", -1, 0, 0, 0, 0, 1);
      flush_out();
      continue;
    }
    int ended = 0;
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pfd >= 0) {
      struct pollfd pl = {.fd = pfd, .events = POLLIN};
      int r;
      do r = poll(&pl, 1, 20);
      while (r < 0 && errno == EINTR && !stop_flag);
      ended = r > 0;
      close(pfd);
    }
    if (!ended) {
      put("s %ld\n", pid, 0, 0, 0, 0, 1);
      flush_out();
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) {
      if (errno != EINTR) {
        st = -1;
        break;
      }
    }
    long ran = now_us() - began;
    kill(-pid, SIGKILL);
    long size;
    if (scratch_fd >= 0) size = settle_scratch(f[3]);
    else {
      /* no scratch (it could not be opened): the task wrote to its log part itself */
      struct stat sb;
      size = stat(f[3], &sb) == 0 ? (long)sb.st_size : 0;
      if (size == 0) unlink(f[3]);
    }
    free(f);
    /* a start that failed says why: E2BIG (a command or environment too long) is not retried */
    if (spawn_errno) put("e %ld %ld %ld %ld %ld\n", pid, st, size, ran, spawn_errno, 5);
    else put("e %ld %ld %ld %ld\n", pid, st, size, ran, 0, 4);
    long now = now_ms();
    if (unflushed++ == 0) oldest_ms = now;
    if (unflushed >= FLUSH_EVERY || now - oldest_ms >= FLUSH_AFTER_MS) flush_out();
  }
  flush_out();
  if (scratch_fd >= 0) {
    close(scratch_fd);
    unlink(scratch_path);
  }
  return 0;
}
