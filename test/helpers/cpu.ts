// The CPU time this process spends, for bounds on how much work a step does: unlike the wall clock,
// it does not stretch when the suite's other files, servers and browsers load the machine.

/** Starts counting; the function returns the milliseconds of CPU (user and system) spent since. */
export function cpuClock(): () => number {
  const start = process.cpuUsage();
  return () => {
    const spent = process.cpuUsage(start);
    return (spent.user + spent.system) / 1000;
  };
}
