// NCRONTAB schedules of timer functions (`second minute hour day month weekday`, UTC): lists,
// ranges, steps and `*`, and months and weekdays by name (`0 30 9 * Jan Mon`), as the Functions
// docs show them (functions-bindings-timer, "NCRONTAB expressions"): NCrontab takes a name by the
// start of the English name, any case (`Jan`, `january`, `MON`). A day of the month and a weekday
// given together must both match.
export type Schedule = readonly (readonly number[])[];

const MONTHS = [
  'January',
  'February',
  'March',
  'April',
  'May',
  'June',
  'July',
  'August',
  'September',
  'October',
  'November',
  'December',
];
const WEEKDAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
/** The names a field takes, with the value of the first (NCrontab's CrontabFieldImpl). */
const NAMES: readonly (readonly [readonly string[], number] | null)[] = [
  null,
  null,
  null,
  null,
  [MONTHS, 1],
  [WEEKDAYS, 0],
];

const RANGES: readonly [number, number][] = [
  [0, 59],
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12],
  [0, 6],
];

function field(
  text: string,
  [min, max]: [number, number],
  names: readonly [readonly string[], number] | null = null,
): number[] {
  const value = (word: string): number => {
    if (/^\d+$/.test(word)) return Number(word);
    const index = names?.[0].findIndex((name) => name.toLowerCase().startsWith(word.toLowerCase())) ?? -1;
    if (index < 0) throw new Error(`invalid NCRONTAB field "${text}"`);
    return index + (names?.[1] ?? 0);
  };
  const values = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^(\*|\d+|[A-Za-z]+)(?:-(\d+|[A-Za-z]+))?(?:\/(\d+))?$/.exec(part);
    if (!m) throw new Error(`invalid NCRONTAB field "${text}"`);
    const from = m[1] === '*' ? min : value(m[1] as string);
    const to = m[2] !== undefined ? value(m[2]) : m[1] === '*' || m[3] ? max : from;
    const step = m[3] ? Number(m[3]) : 1;
    if (from < min || to > max || step < 1) throw new Error(`invalid NCRONTAB field "${text}"`);
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return [...values].sort((a, b) => a - b);
}

export function parseSchedule(expression: string): Schedule {
  const parts = expression.trim().split(/\s+/);
  if (parts.length !== 6) throw new Error(`NCRONTAB needs 6 fields: "${expression}"`);
  return parts.map((p, i) => field(p, RANGES[i] as [number, number], NAMES[i] ?? null));
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

/**
 * A timer's schedule as the host reads it: `%NAME%` stands for the app setting NAME
 * (functions-bindings-timer, "Configuration": the schedule may be an app setting wrapped in %).
 */
export function resolveSchedule(expression: string, env: NodeJS.ProcessEnv = process.env): string {
  const setting = /^%([^%]+)%$/.exec(expression.trim());
  if (!setting) return expression;
  const value = env[setting[1] as string];
  if (!value?.trim()) throw new Error(`the timer schedule's app setting ${setting[1]} is not set`);
  return value;
}
