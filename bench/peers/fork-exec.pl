#!/usr/bin/perl
# Floor of target 1 for corral's design: `fork-exec.pl <n> <procs> <log>` runs <procs> processes
# that each fork and exec `/bin/sh -c true` n/procs times, one after another, exactly as the
# worker's forker (src/worker/shell-runner.ts) does per task: own process group, stdin from
# /dev/null, stdout and stderr appended to a log part, the group killed after the shell exits.
# Nothing else: no Node, no queue, no durable state, no commit.
my ($n, $procs, $log) = @ARGV;
$procs ||= 2;
$log ||= '/dev/null';
my @kids;
for my $p (0 .. $procs - 1) {
  my $share = int($n / $procs) + ($p < $n % $procs ? 1 : 0);
  my $kid = fork();
  die "fork: $!" unless defined $kid;
  if ($kid == 0) {
    for (1 .. $share) {
      my $pid = fork();
      die "fork: $!" unless defined $pid;
      if ($pid == 0) {
        setpgrp(0, 0);
        open(STDIN, '<', '/dev/null') or CORE::exit(126);
        open(STDOUT, '>>', "$log.$p") or CORE::exit(126);
        open(STDERR, '>>', "$log.$p") or CORE::exit(126);
        exec('/bin/sh', '-c', 'true');
        CORE::exit(127);
      }
      waitpid($pid, 0);
      CORE::exit(1) if $?;
      kill('KILL', -$pid);
    }
    CORE::exit(0);
  }
  push @kids, $kid;
}
my $bad = 0;
for (@kids) { waitpid($_, 0); $bad ||= $?; }
exit($bad ? 1 : 0);
