// The built-in texts of the bot.

export const HELP_TEXT = [
  "Hi! I'm the assistant of this WhatsApp number.",
  'Send me a message and I will answer it.',
  '',
  'Commands:',
  '• help: what I can do',
  '• reset: forget our earlier conversation and start afresh',
  '• stop: stop receiving messages from me',
  '• start: receive messages again',
  '• human (or agent): talk to a person',
].join('\n');

export const WELCOME_TEXT = HELP_TEXT;

export const DEFAULT_ANSWER =
  'Thanks for your message! I have received it. Send "help" to see what I can do.';

export const UNREADABLE_ANSWER = "Sorry, I can't read this kind of message yet. Could you send it as text?";

export const RESET_ANSWER = "Done: I've forgotten our earlier conversation. What can I do for you?";

export const STOP_ANSWER =
  'You will no longer receive messages from me. Send "start" at any time to opt back in.';

export const START_ANSWER =
  'Welcome back! You will receive my answers again. Send "help" to see what I can do.';

export const HUMAN_ANSWER =
  'OK, a person from our team will answer you here as soon as possible. Until then I will stay quiet.';

export const AI_APOLOGY = "Sorry, I couldn't answer that just now. Please try again in a moment.";

export const RATE_LIMIT_NOTICE =
  "You're sending messages faster than I can answer. Please wait a minute and try again.";

/**
 * What an AI answer keeps that was never asked for: Graph refused the access token for the read
 * receipt sent right before, so no answer could go out (recorded `failed`, never sent).
 */
export const NOT_ASKED = '[no AI answer: WhatsApp refused the access token, so the model was not asked]';
