// The chat simulator of `npm run dev` (development only, never registered in Azure): a page where a
// developer chats with the bot as a WhatsApp user. Whatever they send goes to the app's own webhook
// as a notification signed with the app secret, shaped as Meta sends it; the conversation is read
// back through the data module. Page script: web/simulator/app.ts, built into dist/web/.
import type { HttpRequest, HttpResponseInit } from '@azure/functions';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { HttpDefinition } from '../../functions/definition-types';
import type { Runtime } from '../../shared/deps';
import { messageJson, userJson } from '../../shared/manage/service';
import { signBody } from '../../shared/whatsapp/signature';
import { SIMULATOR_CSP, SIMULATOR_CSS, SIMULATOR_HTML } from './simulator-page';

export const SIMULATOR_ROUTE = 'dev/chat';

/** The business number the simulated user writes to (Meta's documentation example). */
export const SIMULATED_BUSINESS = {
  wabaId: '102290129340398',
  phoneNumberId: '106540352242922',
  displayPhoneNumber: '15550783881',
} as const;

const HEADERS = {
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Content-Security-Policy': SIMULATOR_CSP,
} as const;

const json = (status: number, body: unknown): HttpResponseInit => ({
  status,
  jsonBody: body,
  headers: HEADERS,
});
const invalid = (message: string): HttpResponseInit =>
  json(400, { error: { code: 'INVALID_INPUT', message } });

const WaIdSchema = z
  .string()
  .regex(/^\d{6,15}$/, 'a number is 6 to 15 digits, country code first')
  // What the business's own number sends is an echo, never answered (docs/contract.md).
  .refine(
    (v) => v !== SIMULATED_BUSINESS.displayPhoneNumber,
    `${SIMULATED_BUSINESS.displayPhoneNumber} is the simulated business's own number: pick another`,
  );
const MessageIdSchema = z.string().min(1).max(256);

export const SendSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('text'),
    waId: WaIdSchema,
    name: z.string().trim().min(1).max(60),
    text: z.string().trim().min(1).max(4096),
  }),
  z.object({
    kind: z.literal('image'),
    waId: WaIdSchema,
    name: z.string().trim().min(1).max(60),
    caption: z.string().trim().max(1024).optional(),
  }),
  z.object({
    kind: z.literal('location'),
    waId: WaIdSchema,
    name: z.string().trim().min(1).max(60),
    latitude: z.number().min(-90).max(90),
    longitude: z.number().min(-180).max(180),
    place: z.string().trim().max(100).optional(),
    address: z.string().trim().max(200).optional(),
  }),
  z.object({
    kind: z.literal('reaction'),
    waId: WaIdSchema,
    name: z.string().trim().min(1).max(60),
    messageId: MessageIdSchema,
    emoji: z.string().min(1).max(16),
  }),
  z.object({
    kind: z.literal('status'),
    waId: WaIdSchema,
    messageId: MessageIdSchema,
    status: z.enum(['delivered', 'read']),
  }),
]);
export type SimulatedSend = z.infer<typeof SendSchema>;

const seconds = (): string => String(Math.floor(Date.now() / 1000));
const newWamid = (): string => `wamid.SIM${randomBytes(18).toString('base64url')}`;

/** The notification Meta would deliver for what the simulated user did, and the new message's id. */
export function notificationFor(send: SimulatedSend): { payload: unknown; messageId: string | null } {
  const metadata = {
    display_phone_number: SIMULATED_BUSINESS.displayPhoneNumber,
    phone_number_id: SIMULATED_BUSINESS.phoneNumberId,
  };
  const envelope = (value: Record<string, unknown>) => ({
    object: 'whatsapp_business_account',
    entry: [
      {
        id: SIMULATED_BUSINESS.wabaId,
        changes: [{ value: { messaging_product: 'whatsapp', metadata, ...value }, field: 'messages' }],
      },
    ],
  });
  if (send.kind === 'status') {
    const status = {
      id: send.messageId,
      status: send.status,
      timestamp: seconds(),
      recipient_id: send.waId,
      ...(send.status === 'delivered'
        ? {
            conversation: { id: randomBytes(16).toString('hex'), origin: { type: 'service' } },
            pricing: {
              billable: false,
              pricing_model: 'PMP',
              category: 'service',
              type: 'free_customer_service',
            },
          }
        : {}),
    };
    return { payload: envelope({ statuses: [status] }), messageId: null };
  }
  const id = newWamid();
  const base = { from: send.waId, id, timestamp: seconds() };
  const message =
    send.kind === 'text'
      ? { ...base, type: 'text', text: { body: send.text } }
      : send.kind === 'image'
        ? {
            ...base,
            type: 'image',
            image: {
              ...(send.caption ? { caption: send.caption } : {}),
              mime_type: 'image/jpeg',
              sha256: randomBytes(32).toString('base64'),
              id: String(10n ** 15n + BigInt(randomBytes(6).readUIntBE(0, 6))),
            },
          }
        : send.kind === 'location'
          ? {
              ...base,
              type: 'location',
              location: {
                latitude: send.latitude,
                longitude: send.longitude,
                ...(send.place ? { name: send.place } : {}),
                ...(send.address ? { address: send.address } : {}),
              },
            }
          : { ...base, type: 'reaction', reaction: { message_id: send.messageId, emoji: send.emoji } };
  return {
    payload: envelope({
      contacts: [{ profile: { name: send.name }, wa_id: send.waId }],
      messages: [message],
    }),
    messageId: id,
  };
}

/** Serialised as Meta does (non-ASCII escaped as \uXXXX), so the signature covers the same bytes. */
export const metaJson = (payload: unknown): string =>
  JSON.stringify(payload).replace(
    /[\u0080-\uffff]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );

/** The folder with package.json above this file (source under tsx, or dist/ when built). */
export function packageRoot(from: string = __dirname): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${from}`);
  }
}

/**
 * A body sent chunked (no Content-Length) never reaches a function: the local host passes none, as
 * the Functions host does. Answered 411, as the app's routes answer it, not a misleading 400.
 */
const chunked = (request: HttpRequest): boolean =>
  request.headers.has('transfer-encoding') && !request.headers.has('content-length');
const lengthRequired = (): HttpResponseInit =>
  json(411, {
    error: { code: 'LENGTH_REQUIRED', message: 'a body needs a Content-Length header (not chunked)' },
  });

async function readBody(request: HttpRequest): Promise<unknown> {
  try {
    return JSON.parse(await request.text()) as unknown;
  } catch {
    return undefined;
  }
}

const LOOPBACK_NAMES: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '[::1]']);
/** A loopback peer as the local host writes it in X-Forwarded-For (`ip:port`, `[ipv6]:port`). */
const LOOPBACK_PEER =
  /^(?:127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]|\[::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3}\])(?::\d+)?$/i;

/**
 * Whether a request comes straight from this machine's own pages and programs. The simulator signs
 * whatever it is sent and reads anyone's conversation without a token, so: its Host is a loopback
 * name (not a name an attacker's DNS rebinds to 127.0.0.1); nothing forwarded it (a tunnel that
 * brings Meta's webhooks in says whom it forwards for); and a browser's Origin, when it sends one,
 * is this server's (not another site posting to it).
 */
export function fromThisMachine(request: HttpRequest): boolean {
  const host = request.headers.get('host') ?? '';
  let hostname: string;
  try {
    hostname = new URL(`http://${host}`).hostname;
  } catch {
    return false;
  }
  if (!LOOPBACK_NAMES.has(hostname)) return false;
  if (request.headers.has('forwarded') || request.headers.has('x-forwarded-host')) return false;
  // The local host appends the peer's address: one entry, and a loopback one, when none came in.
  const forwardedFor = (request.headers.get('x-forwarded-for') ?? '').split(',');
  if (forwardedFor.length !== 1 || !LOOPBACK_PEER.test(forwardedFor[0]?.trim() ?? '')) return false;
  const origin = request.headers.get('origin');
  return origin === null || origin.toLowerCase() === `http://${host.toLowerCase()}`;
}

/** The simulator's routes, for the local host to append to the app's definitions. */
export function simulatorDefinitions(runtime: Runtime): HttpDefinition[] {
  const script = path.join(packageRoot(), 'dist', 'web', 'simulator', 'app.js');
  const page = (body: string, contentType: string) => async (): Promise<HttpResponseInit> => ({
    status: 200,
    headers: { ...HEADERS, 'Content-Type': contentType },
    body,
  });
  const definition = (
    name: string,
    route: string,
    methods: HttpDefinition['methods'],
    handler: HttpDefinition['handler'],
  ): HttpDefinition => ({
    kind: 'http',
    name,
    route,
    methods,
    authLevel: 'anonymous',
    handler: async (request, context) =>
      fromThisMachine(request)
        ? handler(request, context)
        : json(403, {
            error: { code: 'FORBIDDEN', message: 'the simulator answers only requests made on this machine' },
          }),
  });

  return [
    definition('devChatPage', SIMULATOR_ROUTE, ['GET'], page(SIMULATOR_HTML, 'text/html; charset=utf-8')),
    definition('devChatStyle', `${SIMULATOR_ROUTE}/app.css`, ['GET'], page(SIMULATOR_CSS, 'text/css')),
    definition('devChatScript', `${SIMULATOR_ROUTE}/app.js`, ['GET'], async () => {
      const body = await readFile(script, 'utf8').catch(() => null);
      if (body === null)
        return json(503, {
          error: { code: 'UNAVAILABLE', message: 'the simulator script is not built: run npm run build:web' },
        });
      return { status: 200, headers: { ...HEADERS, 'Content-Type': 'text/javascript' }, body };
    }),
    definition('devChatSend', `${SIMULATOR_ROUTE}/send`, ['POST'], async (request) => {
      if (chunked(request)) return lengthRequired();
      const parsed = SendSchema.safeParse(await readBody(request));
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        return invalid(`${issue?.path.join('.') || 'body'}: ${issue?.message ?? 'invalid'}`);
      }
      const { payload, messageId } = notificationFor(parsed.data);
      const body = metaJson(payload);
      const webhook = await fetch(new URL('/api/webhook', request.url), {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'X-Hub-Signature-256': signBody(body, runtime.config().whatsapp.appSecret),
        },
        body,
      });
      await webhook.arrayBuffer();
      return json(webhook.ok ? 200 : 502, { webhookStatus: webhook.status, messageId });
    }),
    // A Graph API stand-in: with WHATSAPP_GRAPH_URL=<this server>/api/dev/graph and any
    // WHATSAPP_ACCESS_TOKEN, replies are "sent" (they get a wamid) without leaving the machine.
    definition(
      'devGraphMessages',
      'dev/graph/{version}/{phoneNumberId}/messages',
      ['POST'],
      async (request) => {
        const graphError = (status: number, message: string) =>
          json(status, { error: { message, type: 'OAuthException', code: status === 401 ? 190 : 100 } });
        if (!/^Bearer \S+/.test(request.headers.get('authorization') ?? ''))
          return graphError(401, 'missing access token');
        const body = (await readBody(request)) as Record<string, unknown> | undefined;
        if (body?.['messaging_product'] !== 'whatsapp')
          return graphError(400, 'messaging_product must be whatsapp');
        if (body['status'] === 'read') return json(200, { success: true });
        const to = typeof body['to'] === 'string' ? body['to'] : null;
        if (typeof body['type'] !== 'string' || (!to && typeof body['recipient'] !== 'string'))
          return graphError(400, 'a message needs a type and a recipient');
        return json(200, {
          messaging_product: 'whatsapp',
          ...(to ? { contacts: [{ input: to, wa_id: to }] } : {}),
          messages: [{ id: `wamid.SIMOUT${randomBytes(18).toString('base64url')}` }],
        });
      },
    ),
    definition('devChatMessages', `${SIMULATOR_ROUTE}/messages`, ['GET'], async (request) => {
      const waId = WaIdSchema.safeParse(request.query.get('waId') ?? '');
      if (!waId.success) return invalid(`waId: ${waId.error.issues[0]?.message ?? 'invalid'}`);
      const { config, data, now } = await runtime.services();
      // Found by the number as it is now (a number change keeps the user, not the id rule).
      const user = await data.users.findByIdentity({ waId: waId.data, bsuid: null });
      const page = user
        ? await data.manage.listMessages({ userId: user.id, limit: 200, after: null })
        : { items: [] };
      return json(200, {
        dryRun: !config.whatsapp.accessToken,
        user: user ? userJson(user, { now: now(), handoffHours: config.handoffHours }) : null,
        // In conversation order on our clock: Meta's whole-second timestamps cannot place a message
        // against our answers (docs/architecture.md, "Data").
        messages: [...page.items]
          .sort((a, b) => a.seqAt.getTime() - b.seqAt.getTime() || (a.id < b.id ? -1 : 1))
          .map((m) => ({ ...messageJson(m), relatedId: m.relatedId })),
      });
    }),
  ];
}
