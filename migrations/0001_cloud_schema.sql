-- 0001_cloud_schema.sql — tandem's cloud tables for a Supabase project.
--
-- How to apply: paste into the Supabase SQL editor (or run `psql -v ON_ERROR_STOP=1 -f`)
-- as the project's `postgres` user, once. It relies on what every Supabase project already
-- has — the roles `anon`, `authenticated`, `service_role` and the function `auth.uid()` —
-- and creates neither roles nor the `auth` schema.
--
-- What the cloud sees: tandem keeps the truth on each device (SQLite) and mirrors it here
-- for other devices and for the web. Message bodies arrive end-to-end encrypted: the
-- server stores ciphertext, nonces and public keys only, never a plaintext message or a
-- secret key.
--
-- Conventions used throughout:
--   * ids are uuids chosen by the client (local ids are kept as they are); a random
--     default exists for hand-written inserts;
--   * every table carries `user_id uuid not null default auth.uid()`, the owner; clients
--     may omit it, and row-level security refuses any value but the caller's own;
--   * every timestamp is a `bigint` count of milliseconds since the Unix epoch (UTC) in a
--     column whose name ends in `_ms`, the same unit the devices use; the defaults fill
--     in the server's clock when a client leaves them out;
--   * binary values (ciphertext, nonces, keys, signatures) are standard base64 text.
--
-- Access model: the `authenticated` role (a signed-in user's JWT) may read and write only
-- its own rows; `anon` gets nothing at all; `service_role` (server-side key) bypasses RLS
-- as usual on Supabase. A write that names another user as owner, or that points at a
-- session or device of another user, fails with SQLSTATE 42501, which PostgREST returns
-- as HTTP 403. Reading other users' rows is not an error: they are simply not there
-- (HTTP 200 with an empty list).
--
-- Policies call `(select auth.uid())` rather than `auth.uid()` so that PostgreSQL
-- evaluates it once per statement instead of once per row.

begin;

-- ---------------------------------------------------------------------------------------
-- repositories: one row per code repository a user works in.
-- ---------------------------------------------------------------------------------------
create table public.repositories (
  id             uuid   primary key default gen_random_uuid(),
  user_id        uuid   not null default auth.uid(),
  name           text   not null,
  remote_url     text,
  created_at_ms  bigint not null default (extract(epoch from now()) * 1000)::bigint,
  updated_at_ms  bigint not null default (extract(epoch from now()) * 1000)::bigint
);

create index repositories_user_id_idx on public.repositories (user_id);

-- ---------------------------------------------------------------------------------------
-- sessions: an agent conversation inside a repository.
--   status          'active' or 'ended';
--   runtime_status  the latest runtime snapshot the device published (free-form JSON),
--                   with the device clock time it was taken at;
--   ended_at_ms     set when the session ended (left null while active).
-- ---------------------------------------------------------------------------------------
create table public.sessions (
  id                            uuid   primary key default gen_random_uuid(),
  user_id                       uuid   not null default auth.uid(),
  repository_id                 uuid   not null
                                  references public.repositories (id) on delete cascade,
  title                         text   not null default '',
  status                        text   not null default 'active'
                                  check (status in ('active', 'ended')),
  runtime_status                jsonb,
  runtime_status_updated_at_ms  bigint,
  created_at_ms                 bigint not null default (extract(epoch from now()) * 1000)::bigint,
  updated_at_ms                 bigint not null default (extract(epoch from now()) * 1000)::bigint,
  ended_at_ms                   bigint
);

create index sessions_user_id_idx on public.sessions (user_id);
create index sessions_repository_id_idx on public.sessions (repository_id);

-- ---------------------------------------------------------------------------------------
-- devices: each installation of tandem a user signs in on, with its public keys.
--   x25519_public_key   32 bytes, base64: session keys are wrapped to it;
--   ed25519_public_key  32 bytes, base64: verifies the key wraps the device signs.
-- A device is revoked (revoked_at_ms set), not deleted: its key wraps stay verifiable.
-- The keys of a registered device cannot change and a revocation cannot be undone (see
-- the trigger below), so other devices can pin the keys they saw first.
-- ---------------------------------------------------------------------------------------
create table public.devices (
  id                  uuid   primary key default gen_random_uuid(),
  user_id             uuid   not null default auth.uid(),
  name                text   not null,
  platform            text   not null,
  x25519_public_key   text   not null,
  ed25519_public_key  text   not null,
  last_seen_at_ms     bigint,
  revoked_at_ms       bigint,
  created_at_ms       bigint not null default (extract(epoch from now()) * 1000)::bigint
);

create index devices_user_id_idx on public.devices (user_id);

-- Refuses (SQLSTATE 42501, HTTP 403) an update that changes a device's public keys or
-- clears its revocation. Re-sending the same registration (an idempotent upsert with the
-- same keys) is fine, and so is updating name, platform or last_seen_at_ms.
create function public.tandem_devices_guard() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if new.x25519_public_key is distinct from old.x25519_public_key
     or new.ed25519_public_key is distinct from old.ed25519_public_key then
    raise exception 'the public keys of device % cannot change', old.id
      using errcode = '42501',
            hint = 'register a new device instead';
  end if;
  if old.revoked_at_ms is not null
     and new.revoked_at_ms is distinct from old.revoked_at_ms then
    raise exception 'device % is revoked; a revocation cannot be changed or undone', old.id
      using errcode = '42501';
  end if;
  return new;
end
$$;

-- Only fires as a trigger; nobody needs to call it through the API.
revoke all on function public.tandem_devices_guard() from public, anon, authenticated;

create trigger devices_guard
  before update on public.devices
  for each row execute function public.tandem_devices_guard();

-- ---------------------------------------------------------------------------------------
-- messages: the encrypted transcript of a session.
--   sequence_number     1, 2, 3, … per session, assigned on the device; (session_id,
--                       sequence_number) is unique and is the upsert key the sync uses
--                       (`on_conflict=session_id,sequence_number` with
--                       `Prefer: resolution=merge-duplicates`), so re-sending a batch
--                       changes nothing;
--   role                who spoke (user, assistant, tool, …), in clear for listing;
--   content_ciphertext  the sealed message body, base64;
--   content_nonce       the AEAD nonce, base64;
--   key_epoch           which session key (see session_key_wraps) sealed it; devices
--                       count epochs in an unsigned 32-bit integer, which PostgreSQL's
--                       `integer` cannot hold, hence `bigint` bounded to that range;
--   encryption_alg      algorithm name, e.g. 'xchacha20poly1305';
--   sender_device_id    the device that sealed it; also bound into the ciphertext's
--                       associated data, so it is deliberately not a foreign key (a
--                       message may arrive before its device's registration does).
-- ---------------------------------------------------------------------------------------
create table public.messages (
  id                  uuid    primary key default gen_random_uuid(),
  user_id             uuid    not null default auth.uid(),
  session_id          uuid    not null references public.sessions (id) on delete cascade,
  sequence_number     bigint  not null check (sequence_number > 0),
  role                text    not null,
  content_ciphertext  text    not null,
  content_nonce       text    not null,
  key_epoch           bigint  not null check (key_epoch between 0 and 4294967295),
  encryption_alg      text    not null,
  sender_device_id    uuid    not null,
  created_at_ms       bigint  not null default (extract(epoch from now()) * 1000)::bigint,
  constraint messages_session_sequence_key unique (session_id, sequence_number)
);

-- The unique constraint above doubles as the index for reading a session in order.
create index messages_user_id_idx on public.messages (user_id);

-- ---------------------------------------------------------------------------------------
-- session_key_wraps: a session key (per key epoch) sealed to one recipient device:
-- ephemeral X25519 key agreement, HKDF-SHA256, XChaCha20-Poly1305, and an Ed25519
-- signature by the sender device over the wrap. Recipients verify the signature against
-- the sender's `devices.ed25519_public_key` before decrypting.
--   ephemeral_public_key, nonce, ciphertext, signature   base64.
-- The server enforces that sender and recipient are both devices of the caller and are
-- not revoked: a revoked device can no longer hand out keys, and a new key epoch cannot
-- be wrapped to a revoked device. (A retried upload of an old wrap to a device revoked
-- meanwhile is refused with 42501 as well; the new epoch makes it moot.)
-- Deleting a recipient device deletes the wraps addressed to it; a device that still
-- signed wraps cannot be deleted (revoke it instead).
-- ---------------------------------------------------------------------------------------
create table public.session_key_wraps (
  session_id            uuid    not null references public.sessions (id) on delete cascade,
  key_epoch             bigint  not null check (key_epoch between 0 and 4294967295),
  recipient_device_id   uuid    not null references public.devices (id) on delete cascade,
  sender_device_id      uuid    not null references public.devices (id),
  user_id               uuid    not null default auth.uid(),
  ephemeral_public_key  text    not null,
  nonce                 text    not null,
  ciphertext            text    not null,
  signature             text    not null,
  created_at_ms         bigint  not null default (extract(epoch from now()) * 1000)::bigint,
  primary key (session_id, key_epoch, recipient_device_id)
);

create index session_key_wraps_recipient_idx
  on public.session_key_wraps (recipient_device_id);
create index session_key_wraps_sender_idx
  on public.session_key_wraps (sender_device_id);
create index session_key_wraps_user_id_idx
  on public.session_key_wraps (user_id);

-- ---------------------------------------------------------------------------------------
-- Row-level security.
-- One policy per command keeps the error messages precise. USING decides which existing
-- rows a statement may see or touch; WITH CHECK decides which new row versions it may
-- write, so a row can neither be created for nor handed over to another user.
-- ---------------------------------------------------------------------------------------
alter table public.repositories      enable row level security;
alter table public.sessions          enable row level security;
alter table public.devices           enable row level security;
alter table public.messages          enable row level security;
alter table public.session_key_wraps enable row level security;

-- repositories
create policy repositories_select on public.repositories
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy repositories_insert on public.repositories
  for insert to authenticated
  with check (user_id = (select auth.uid()));
create policy repositories_update on public.repositories
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
create policy repositories_delete on public.repositories
  for delete to authenticated
  using (user_id = (select auth.uid()));

-- sessions: a session must also sit in one of the caller's repositories.
create policy sessions_select on public.sessions
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy sessions_insert on public.sessions
  for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.repositories r
      where r.id = sessions.repository_id and r.user_id = (select auth.uid())
    )
  );
create policy sessions_update on public.sessions
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.repositories r
      where r.id = sessions.repository_id and r.user_id = (select auth.uid())
    )
  );
create policy sessions_delete on public.sessions
  for delete to authenticated
  using (user_id = (select auth.uid()));

-- devices
create policy devices_select on public.devices
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy devices_insert on public.devices
  for insert to authenticated
  with check (user_id = (select auth.uid()));
create policy devices_update on public.devices
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (user_id = (select auth.uid()));
create policy devices_delete on public.devices
  for delete to authenticated
  using (user_id = (select auth.uid()));

-- messages: a message must belong to one of the caller's sessions.
create policy messages_select on public.messages
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy messages_insert on public.messages
  for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.sessions s
      where s.id = messages.session_id and s.user_id = (select auth.uid())
    )
  );
create policy messages_update on public.messages
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.sessions s
      where s.id = messages.session_id and s.user_id = (select auth.uid())
    )
  );
create policy messages_delete on public.messages
  for delete to authenticated
  using (user_id = (select auth.uid()));

-- session_key_wraps: the session and both devices must be the caller's, and both devices
-- must be active (revoked_at_ms is null).
create policy session_key_wraps_select on public.session_key_wraps
  for select to authenticated
  using (user_id = (select auth.uid()));
create policy session_key_wraps_insert on public.session_key_wraps
  for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.sessions s
      where s.id = session_key_wraps.session_id and s.user_id = (select auth.uid())
    )
    and exists (
      select 1 from public.devices d
      where d.id = session_key_wraps.sender_device_id
        and d.user_id = (select auth.uid())
        and d.revoked_at_ms is null
    )
    and exists (
      select 1 from public.devices d
      where d.id = session_key_wraps.recipient_device_id
        and d.user_id = (select auth.uid())
        and d.revoked_at_ms is null
    )
  );
create policy session_key_wraps_update on public.session_key_wraps
  for update to authenticated
  using (user_id = (select auth.uid()))
  with check (
    user_id = (select auth.uid())
    and exists (
      select 1 from public.sessions s
      where s.id = session_key_wraps.session_id and s.user_id = (select auth.uid())
    )
    and exists (
      select 1 from public.devices d
      where d.id = session_key_wraps.sender_device_id
        and d.user_id = (select auth.uid())
        and d.revoked_at_ms is null
    )
    and exists (
      select 1 from public.devices d
      where d.id = session_key_wraps.recipient_device_id
        and d.user_id = (select auth.uid())
        and d.revoked_at_ms is null
    )
  );
create policy session_key_wraps_delete on public.session_key_wraps
  for delete to authenticated
  using (user_id = (select auth.uid()));

-- ---------------------------------------------------------------------------------------
-- Privileges. Supabase grants every new table in `public` to anon, authenticated and
-- service_role by default; take all of it back and hand out exactly what is needed.
-- ---------------------------------------------------------------------------------------
revoke all on table
  public.repositories, public.sessions, public.devices,
  public.messages, public.session_key_wraps
  from anon, authenticated;

grant select, insert, update, delete on table
  public.repositories, public.sessions, public.devices,
  public.messages, public.session_key_wraps
  to authenticated;

grant all on table
  public.repositories, public.sessions, public.devices,
  public.messages, public.session_key_wraps
  to service_role;

commit;

-- Tell a running PostgREST to pick up the new tables (harmless when none listens).
notify pgrst, 'reload schema';
