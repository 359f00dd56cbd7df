// The OpenAPI 3 document of the management API, generated from the zod schemas it validates with.
import { OpenAPIRegistry, OpenApiGeneratorV3, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import type { z } from 'zod';
import {
  ChatsQuerySchema,
  ChatsSchema,
  ErrorSchema,
  ExportSchema,
  MessagesPageSchema,
  PageQuerySchema,
  SearchQuerySchema,
  StatsSchema,
  UserIdParamsSchema,
  UserSchema,
  UsersPageSchema,
  UsersQuerySchema,
} from './schemas';

const json = (schema: z.ZodType, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});

const errors = {
  400: json(ErrorSchema, 'A query parameter is invalid (the message names it)'),
  401: json(ErrorSchema, 'Missing or unknown token'),
  403: json(ErrorSchema, 'Revoked or expired token'),
};

let document: object | undefined;

export function openApiDocument(): object {
  if (document) return document;
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  const routes: RouteConfig[] = [
    {
      method: 'get',
      path: '/manage/stats',
      summary: 'Counters, users and the daily series of the last 30 UTC days',
      responses: { 200: json(StatsSchema, 'Stats'), ...errors },
    },
    {
      method: 'get',
      path: '/manage/users',
      summary: 'Users, most recent activity first',
      request: { query: UsersQuerySchema },
      responses: { 200: json(UsersPageSchema, 'A page of users'), ...errors },
    },
    {
      method: 'get',
      path: '/manage/users/{id}',
      summary: 'One user',
      request: { params: UserIdParamsSchema },
      responses: { 200: json(UserSchema, 'The user'), ...errors, 404: json(ErrorSchema, 'Unknown user') },
    },
    {
      method: 'delete',
      path: '/manage/users/{id}',
      summary: 'Erase a user, their messages and archived events (audited)',
      request: { params: UserIdParamsSchema },
      responses: { 204: { description: 'Erased' }, ...errors, 404: json(ErrorSchema, 'Unknown user') },
    },
    {
      method: 'get',
      path: '/manage/users/{id}/messages',
      summary: "A user's messages, newest first",
      request: { params: UserIdParamsSchema, query: PageQuerySchema },
      responses: {
        200: json(MessagesPageSchema, 'A page of messages'),
        ...errors,
        404: json(ErrorSchema, 'Unknown user'),
      },
    },
    {
      method: 'get',
      path: '/manage/users/{id}/export',
      summary: 'Everything stored about a user (audited)',
      request: { params: UserIdParamsSchema },
      responses: { 200: json(ExportSchema, 'The export'), ...errors, 404: json(ErrorSchema, 'Unknown user') },
    },
    {
      method: 'get',
      path: '/manage/chats',
      summary: 'Latest chats: users by last activity with their last message',
      request: { query: ChatsQuerySchema },
      responses: { 200: json(ChatsSchema, 'Chats'), ...errors },
    },
    {
      method: 'get',
      path: '/manage/messages',
      summary: 'Search messages by word prefixes, newest first',
      request: { query: SearchQuerySchema },
      responses: { 200: json(MessagesPageSchema, 'A page of messages'), ...errors },
    },
  ];
  for (const route of routes) registry.registerPath({ ...route, security: [{ bearer: [] }] });
  document = new OpenApiGeneratorV3(registry.definitions).generateDocument({
    openapi: '3.0.3',
    info: { title: 'WhatsApp bot management API', version: '1.0.0' },
    servers: [{ url: '/api' }],
  });
  return document;
}
