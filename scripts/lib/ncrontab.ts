// NCRONTAB schedules of timer functions (`second minute hour day month weekday`, UTC): lists,
// ranges, steps and `*`, which is what the app's timers use.
export type Schedule = readonly (readonly number[])[];

const RANGES: readonly [number, number][] = [
  [0, 59],
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12],
  [0, 6],
];

function field(text: string, [min, max]: [number, number]): number[] {
  const values = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|\d+)(?:-(\d+))?(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`invalid NCRONTAB field "${text}"`);
    const from = m[1] === '*' ? min : Number(m[1]);
    const to = m[2] !== undefined ? Number(m[2]) : m[1] === '*' || m[3] ? max : from;
    const step = m[3] ? Number(m[3]) : 1;
    if (from < min || to > max || step < 1) throw new Error(`invalid NCRONTAB field "${text}"`);
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return [...values].sort((a, b) => a - b);
}

export function parseSchedule(expression: string): Schedule {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 6) throw new Error(`NCRONTAB needs 6 fields: "${expression}"`);
  return parts.map((p, i) => field(p, RANGES[i] as [number, number]));
}

/** The first occurrence strictly after `after` (second precision, UTC). */
export function nextOccurrence(schedule: Schedule, after: Date): Date {
  const [seconds, minutes, hours, days, months, weekdays] = schedule as number[][];
  const t = new Date(Math.floor(after.getTime() / 1000) * 1000 + 1000);
  // Minute by minute for at most a year and a day: plenty for any valid schedule.
  for (let i = 0; i < 366 * 24 * 60 + 1; i++) {
    const ok =
      months!.includes(t.getUTCMonth() + 1) &&
      days!.includes(t.getUTCDate()) &&
      weekdays!.includes(t.getUTCDay()) &&
      hours!.includes(t.getUTCHours()) &&
      minutes!.includes(t.getUTCMinutes());
    if (ok) {
      const second = seconds!.find((s) => s >= t.getUTCSeconds());
      if (second !== undefined) {
        t.setUTCSeconds(second);
        return t;
      }
    }
    t.setUTCSeconds(0);
    t.setUTCMinutes(t.getUTCMinutes() + 1);
  }
  throw new Error('schedule never fires');
}
