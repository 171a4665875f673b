-- supabase_test_bootstrap.sql
--
-- Test-only: makes a plain PostgreSQL database look enough like a Supabase project for
-- the files in migrations/ to apply unchanged and for row-level security to behave as it
-- does behind Supabase's PostgREST. Never run this against a real Supabase project: there,
-- the roles, the `auth` schema and the default privileges below already exist.
--
-- What it provides:
--   * roles `anon`, `authenticated`, `service_role` (NOLOGIN; service_role bypasses RLS)
--     and `authenticator` (LOGIN NOINHERIT, member of the three). PostgREST logs in as
--     `authenticator` (or as a superuser) and runs each request under the JWT's `role`
--     claim with SET ROLE;
--   * schema `auth` with `auth.uid()`, `auth.role()` and `auth.jwt()`, which read the
--     claims PostgREST publishes in the `request.jwt.claims` setting;
--   * Supabase's default privileges on schema `public` (every new table, sequence and
--     function is granted to anon, authenticated and service_role), so a migration that
--     forgets to revoke something from `anon` fails its tests here as it would leak there.
--
-- Roles are cluster-wide while each test run gets its own database, so several runs may
-- execute this file at the same moment. The whole file runs in one transaction that first
-- takes a lock on the shared catalog pg_authid (a cluster-wide lock), which serialises the
-- role creation below; every statement is idempotent.

begin;

lock table pg_catalog.pg_authid in share row exclusive mode;

do $bootstrap$
declare
  r text;
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;

  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (
      select 1
      from pg_auth_members m
      join pg_roles g on g.oid = m.roleid
      join pg_roles u on u.oid = m.member
      where g.rolname = r and u.rolname = 'authenticator'
    ) then
      execute format('grant %I to authenticator', r);
    end if;
  end loop;
end
$bootstrap$;

-- Everything from here on is per database.

create schema if not exists auth;

-- The caller's user id: the `sub` claim of the request's JWT, or null when there is no
-- JWT, no `sub`, or an empty one (anonymous requests, direct SQL sessions).
create or replace function auth.uid() returns uuid
language sql stable
as $$
  select nullif(
    nullif(current_setting('request.jwt.claims', true), '')::json ->> 'sub',
    ''
  )::uuid
$$;

-- The caller's role claim (`anon`, `authenticated`, `service_role`), or null.
create or replace function auth.role() returns text
language sql stable
as $$
  select nullif(
    nullif(current_setting('request.jwt.claims', true), '')::json ->> 'role',
    ''
  )
$$;

-- All claims of the request's JWT as jsonb (empty object when there is none).
create or replace function auth.jwt() returns jsonb
language sql stable
as $$
  select coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;

grant usage on schema public to anon, authenticated, service_role;
grant usage on schema auth to anon, authenticated, service_role;
grant execute on function auth.uid(), auth.role(), auth.jwt()
  to anon, authenticated, service_role;

-- Supabase grants everything created in `public` to its API roles by default and relies
-- on RLS plus explicit revokes; reproduce that for objects created by the current role.
alter default privileges in schema public
  grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on sequences to anon, authenticated, service_role;
alter default privileges in schema public
  grant all on functions to anon, authenticated, service_role;

commit;
